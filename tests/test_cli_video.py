"""The command line's video writer gives the same file each time it encodes the same frames."""

import numpy as np
import pytest

pytest.importorskip("av")


def moving_frames(count=24, width=64, height=128):
    """Smooth noise with a bright box moving across it: motion for x264's lookahead to propagate through."""
    rng = np.random.default_rng(0)
    background = rng.integers(0, 256, (height // 8, width // 8, 1), dtype=np.uint8).repeat(8, 0).repeat(8, 1).repeat(3, 2)
    frames = []
    for i in range(count):
        frame = np.roll(background, i, axis=1).copy()
        frame[40 + i:72 + i, 2 * i % width:2 * i % width + 16] = 240
        frames.append(frame)
    return np.stack(frames)


def encode(path, frames, fps=12):
    from poseanimate.cli.video import VideoWriter

    with VideoWriter(path, frames.shape[2], frames.shape[1], fps) as writer:
        writer.write(frames)
    return path.read_bytes()


# 64 and 96 pixels wide: rows of 4 and 6 macroblocks, where x264's AVX-512 MB-tree code reads past a row's end
# (with it, on an AVX-512 CPU, some of these encodes differed in every one of 10 runs); 128: 8 macroblocks
@pytest.mark.parametrize("width", [64, 96, 128])
def test_the_same_frames_encode_to_the_same_file(tmp_path, width):
    import cli_fixtures as fx

    frames = moving_frames(width=width)
    first = encode(tmp_path / "first.mp4", frames)
    for i in range(6):
        churn = [np.random.default_rng(i).integers(0, 256, 1 << 16, dtype=np.uint8) for _ in range(64)]
        assert encode(tmp_path / f"again{i}.mp4", frames) == first, f"encode {i + 2} of {width}-wide frames differs"
        del churn
    decoded, _, _ = fx.read_video(tmp_path / "first.mp4")
    assert decoded.shape == frames.shape and np.abs(decoded.astype(int) - frames).mean() < 1.5


def test_the_writer_keeps_x264_off_avx512(tmp_path):
    import av
    import av.logging

    from poseanimate.cli.video import VideoWriter, pick_codec, x264_instruction_sets

    if pick_codec() != "libx264":
        pytest.skip("this PyAV build has no libx264")
    assert x264_instruction_sets() is None or "AVX512" not in x264_instruction_sets().split(",")
    level = av.logging.get_level()
    with av.logging.Capture() as logs:
        av.logging.set_level(av.logging.INFO)
        try:
            with VideoWriter(tmp_path / "x.mp4", 16, 16, 12) as writer:
                writer.write(np.zeros((1, 16, 16, 3), np.uint8))
        finally:
            av.logging.set_level(level)
    reports = [text for _, name, text in logs if name == "libx264" and "using cpu capabilities" in text]
    assert reports and "AVX512" not in reports[0].split(), reports
