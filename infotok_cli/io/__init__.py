"""Files and media: where bytes go and how videos are read and written.

Holds crash-safe outputs (`atomic`), token files on disk (`files`: an .itok file or an export written
atomically), video decoding and probing (`video`) and encoding (`video_writer`) with PyAV, and the PyAV
part of audio passthrough (`audio`).

May import: rank 0 (`constants`, `errors`) and `format` (the bytes it writes, the audio chunk's data
type). Nothing above. The package is imported lazily: importing `infotok_cli.io` alone loads no PyAV.
"""
