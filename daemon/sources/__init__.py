"""Where frames come from: the watched folder (fs.py) and the ZeroMQ stream (zmq.py), both a
Source (base.py). May import config, frames, threads, endpoints and ops; never decode or later."""
