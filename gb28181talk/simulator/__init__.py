"""The GB28181 device simulator (``gb28181talk-device``): a UA of its own on sip/ and device/.

``options`` says what a device is, ``bodies`` the MANSCDP it reads and writes, ``ua`` its SIP
side (registration, keepalive, queries, broadcast and talk calls), ``call`` the media of one
call, ``cli`` the command line that plays one or many devices.
"""
