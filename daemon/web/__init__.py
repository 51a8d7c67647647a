"""The live plate page: an aiohttp app inside the service (server.py), fed by a small summary of
every plate seen (summary.py), with plain HTML/CSS/JS in static/. May import results and below."""
