"""Replay archived audio through two models and report where they disagree.

``tidzam_ctl model compare A B`` is the command line of this module; nothing here
publishes an event or touches SQL, so the live detections are never affected.

Which audio
    For each source, the archive files (``audio.archive``: ``<source>-YYYY-MM-DD-
    HH-MM-SS.ext``) overlapping [since, until) are decoded as ``source add --database
    DIR --date SINCE`` plays them back: every file is its own session, the first one
    sought to ``since`` (``AudioStream.seek``, sample-accurate), the later ones from
    their own start. A file whose audio cannot be read is skipped with a warning and
    counted (``CompareReport.unreadable``); what was scored before a decoding error
    in the middle of a file is kept.

Which windows
    The live classifier's grid, the one in ``inference.windows``: window ``i`` of a
    session starts at sample ``i * hop``, ``hop = hop_samples(window, overlap)``, and
    a window that would run past the session's end is dropped. The end here is the
    file's end or ``until``, whichever comes first, so a window is scored only when it
    lies entirely inside [since, until).

Models with other feature parameters
    When both models have the same sample rate and window length they score the same
    windows (features still computed with each model's own parameters: mels, FFT,
    band). Otherwise each model gets its own windows (its own rate, window and hop,
    one decoding per rate) and each window of A is paired with the window of B on
    the same channel whose middle is nearest; an A window that no B window overlaps
    is counted as unpaired, not compared. Times reported are A's windows.

Decisions
    Each model decides with its own ``model.json`` rule (threshold, margin:
    ``inference.scoring.decide``), and decisions are compared as label strings
    (``unknown`` included), so models whose label lists differ compare too.

Audio at every boundary here: decoded blocks float32 (channels, n) in [-1, 1] at a
model's sample rate; windows float32 (N, window_samples), mono.

Modules: ``plan`` (archive folders and files, the segments to decode, each model's
grid), ``score`` (decoding, cutting, scoring, pairing: ``compare``), ``report``
(``Tally``, ``CompareReport``).
"""
