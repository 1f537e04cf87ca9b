"""SIP front end: the seam an existing Twisted SIP stack calls to get talk sessions."""
