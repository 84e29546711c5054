"""Reading any video and writing H.264 mp4 files with PyAV (FFmpeg's libraries, no ffmpeg binary)."""

import functools
import logging
import os
from fractions import Fraction

import numpy as np

log = logging.getLogger("poseanimate.cli")

# H.264 through libx264 (PyPI's `av` wheels ship it), then any H.264 encoder FFmpeg has, then
# MPEG-4 Part 2, which every FFmpeg build can write and common players read.
CODECS = ("libx264", "h264", "libopenh264", "mpeg4")
CODEC_OPTIONS = {"libx264": {"crf": "18", "preset": "medium"}}


class VideoError(ValueError):
    """A video that cannot be read or written."""


@functools.cache
def x264_instruction_sets():
    """x264's ``asm`` option naming the instruction sets it found on this CPU less AVX-512, or None where it found no
    AVX-512 (or did not say what it found).

    x264's AVX-512 MB-tree propagation (core 165, as in PyPI's av wheels) works on 8 macroblocks at a time and,
    unlike its AVX2 code, does not leave out those past the end of a row, so where the width is not a multiple of
    128 pixels it can add amounts read from past a row's data: 64 pixels wide, the same frames encoded differently
    from run to run. Without AVX-512 x264 gives the same bytes each run, and where the width is a multiple of 128
    the same bytes as with it."""
    import av
    import av.logging

    level = av.logging.get_level()
    with av.logging.Capture() as logs:
        av.logging.set_level(av.logging.INFO)
        try:
            context = av.CodecContext.create("libx264", "w")
            context.width, context.height, context.pix_fmt, context.time_base = 16, 16, "yuv420p", Fraction(1, 24)
            context.open()
        finally:
            av.logging.set_level(level)
    prefix = "using cpu capabilities:"
    found = [text.split(prefix, 1)[1].split() for _, name, text in logs if name == "libx264" and prefix in text]
    if not found:
        log.debug("libx264 did not report its instruction sets; leaving its choice")
        return None
    if "AVX512" not in found[0]:
        return None
    return ",".join(name for name in found[0] if name != "AVX512")


class VideoReader:
    """The frames (RGB uint8 [H, W, 3], decoded one at a time) and frame rate of a video's first
    video stream."""

    def __init__(self, path, max_frames=None):
        import av

        self.path, self.max_frames = os.fspath(path), max_frames
        if not os.path.isfile(self.path):
            raise VideoError(f"{self.path}: no such file")
        try:
            self.container = av.open(self.path)
        except (av.FFmpegError, OSError, UnicodeDecodeError) as e:
            raise VideoError(f"{self.path} could not be read as a video ({e})") from e
        if not self.container.streams.video:
            self.container.close()
            raise VideoError(f"{self.path} has no video stream")
        self.stream = self.container.streams.video[0]
        rate = self.stream.average_rate or self.stream.guessed_rate or self.stream.base_rate
        if not rate:
            log.warning("%s does not state a frame rate; using 24 fps", self.path)
        self.fps = Fraction(rate or 24)

    def __len__(self):
        """The frame count the file states (0 when it does not), capped at ``max_frames``."""
        return min(self.stream.frames, self.max_frames or self.stream.frames)

    def __iter__(self):
        import av

        count = 0
        try:
            for frame in self.container.decode(self.stream):
                yield frame.to_ndarray(format="rgb24")
                count += 1
                if self.max_frames is not None and count >= self.max_frames:
                    break
        except (av.FFmpegError, OSError) as e:
            if not count:
                raise VideoError(f"{self.path} could not be decoded as a video ({e})") from e
            log.warning("%s: decoding stopped after %d frames (%s); using those", self.path, count, e)
        if not count:
            raise VideoError(f"{self.path} has no frames that could be decoded")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.container.close()


def pick_codec(available=None):
    """The first encoder of CODECS this FFmpeg build has."""
    import av

    available = av.codecs_available if available is None else available
    for name in CODECS:
        if name in available:
            try:
                av.codec.Codec(name, "w")
            except av.FFmpegError:
                continue
            return name
    raise VideoError(f"this PyAV/FFmpeg build has none of the encoders {', '.join(CODECS)}; "
                     "install PyPI's av wheel: pip install av")


class VideoWriter:
    """Writes RGB uint8 frames to a yuv420p video at a fixed frame rate; the container follows the
    file extension (``.mp4`` recommended)."""

    def __init__(self, path, width, height, fps):
        import av

        if width % 2 or height % 2:
            raise VideoError(f"video size {width}x{height} must be even for yuv420p")
        self.codec = pick_codec()
        if self.codec != "libx264":
            log.warning("no libx264 in this PyAV build: writing %s with the %s encoder", path, self.codec)
        self.container = av.open(os.fspath(path), mode="w")
        self.stream = self.container.add_stream(self.codec, rate=Fraction(fps).limit_denominator(1001000))
        self.stream.width, self.stream.height, self.stream.pix_fmt = width, height, "yuv420p"
        options = dict(CODEC_OPTIONS.get(self.codec, {}))
        if self.codec == "libx264" and x264_instruction_sets():
            options["x264-params"] = f"asm={x264_instruction_sets()}"
        self.stream.options = options
        self.frames = 0

    def write(self, frames):
        import av

        for image in frames:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            frame.pts = self.frames
            self.frames += 1
            self.container.mux(self.stream.encode(frame))

    def close(self):
        self.container.mux(self.stream.encode(None))
        self.container.close()

    def __enter__(self):
        return self

    def __exit__(self, kind, value, tb):
        if kind is None:
            self.close()
        else:
            self.container.close()
