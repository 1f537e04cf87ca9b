"""Sans-I/O GB28181 signalling pieces: SDP offers/answers and MANSCDP XML."""
