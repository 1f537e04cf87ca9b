"""Audio sources a talk session plays: tone, file, live push, RTP ingest, a device's own voice.

One module per kind; import what you use from its module (this package
re-exports nothing, so importing one kind never loads the others)::

    base      frame constants, byte/ms arithmetic, the API body's field parsers
    live      LiveSource: the bounded backlog and producer flow control (ILiveSource)
    tone      ToneSource
    file      FileSource, load_audio_file (in a thread: load_audio_file_in_thread)
    device    DeviceAudioSource, a live source that is also an IAudioSink
    push      PushSource: pushed bytes -> 8 kHz PCM16 (IPushSource)
    ingest    RtpIngestSource: RTP over UDP
    registry  SourceRegistry and the kind -> builder table (imports the kinds)

Imports point one way: the registry imports the kinds, the kinds import
``base`` and ``live``, and no kind imports the registry.  The WebSocket that
feeds a push source is in :mod:`gb28181talk.web.push`.
"""
