"""Where results go once durable: verdicts on ZeroMQ, contamination alerts, their webhook, dirt on
the optics, unfamiliar plates. May import config, frames, endpoints and ops; never sources."""
