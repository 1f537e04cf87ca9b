"""Sans-I/O media: RTP, TCP framing, G.711, WAV, resampling and MPEG-PS over plain bytes."""
