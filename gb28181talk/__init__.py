"""gb28181talk: GB28181 voice broadcast and two-way talk over TCP passive mode, on Twisted."""

__version__ = "0.1.0"
