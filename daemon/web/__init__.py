"""The live plate page: an aiohttp app inside the service (daemon.web.server), fed by a small
in-memory summary of every plate seen (daemon.web.summary), with plain HTML/CSS/JS in static/."""
