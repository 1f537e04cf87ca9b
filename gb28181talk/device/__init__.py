"""The device side of a talk call: the media core a simulated camera or loudspeaker runs.

``media`` (sans-I/O) hears the talk stream: deframing, figures, raw/PS unpacking, G.711, WAV;
``figures`` defines the stream's figures; ``voice`` (sans-I/O) is what the device says back;
``protocol`` puts both on a Twisted TCP or UDP connection; ``timed`` reads a plain socket one
packet per read with the kernel's receive timestamps (timed tests, the benchmarks).
"""
