"""The device side of a talk call: the media core a simulated camera or loudspeaker runs."""
