"""``tidzam_ctl dataset edit``: the original Database Editor, as a Textual text UI.

Three views of one screen layout (classes | rows | spectrogram and details):

- a compiled dataset (``.npz``, ``learning.datasets.compile``): classes with their window
  counts, the windows of the selected class with their provenance (file,
  offset, channel, side). Relabel and delete are kept in memory (labels and a
  deleted mask, so undo is cheap) and written by ``s`` through
  ``learning.datasets.operations.save`` (atomic), one ``edit`` line in the dataset history;
- a folder of extracted samples (``['<label>'](<source>-<channel>)_<time>.wav``):
  label folders, the samples in them. Every change is a file move made at once
  (relabel = move into the label's folder under the new name, delete = move
  into ``deleted/``, accept = move an ``unchecked/`` sample into its label's
  folder), so nothing is ever lost and ``u`` moves it back;
- a stream (``--stream FILE_OR_URL``): the classifier's windows one by one; a
  number key or ``l`` saves the window as an extracted sample (the naming above,
  in the label's folder) that ``tidzam_ctl dataset from-samples`` picks up.

This module holds the two Textual apps; everything that is not drawing the screen
lives in plain classes and functions beside it, which the apps only call:
``browsers`` (what the browsing app shows and changes), ``dataset_edits``
(``DatasetEdits``), ``sample_folder`` (``SampleFolder``), ``stream_stepper``
(``StreamStepper``), ``window_audio``, ``spectrogram`` (``render_spectrogram``),
``player`` (``Player``), ``screens`` (the dialogs), ``errors`` (``EditorError``).

Audio at every boundary here: float32, (channels, n) or mono (n,), at the
dataset's feature sample rate (``FeatureParams.sample_rate``, 48 kHz by default).
Features: log-mel windows float32 (frames, mels), natural log of power.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from typing import ClassVar

from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.widgets import DataTable, Footer, OptionList, Static
from textual.widgets.option_list import Option

from audio.decode import AudioDecodeError
from inference.features import F32, window_features
from learning.datasets.errors import ClassNameError
from tidzam_ctl.editor.browsers import MAX_ROWS, Browser
from tidzam_ctl.editor.errors import EditorError
from tidzam_ctl.editor.player import Player
from tidzam_ctl.editor.sample_folder import SampleFolder, sample_time_text
from tidzam_ctl.editor.screens import ConfirmScreen, PromptScreen
from tidzam_ctl.editor.spectrogram import render_spectrogram
from tidzam_ctl.editor.stream_stepper import StreamStepper, StreamWindow

_LAYOUT_CSS = """
#main { height: 1fr; }
#classes { width: 24; }
#rows { width: 1fr; }
#right { width: 1fr; min-width: 32; }
#spec { height: 1fr; }
#details { height: auto; max-height: 9; }
#status { height: 1; background: $boost; }
"""


class _EditorApp(App[None]):
    """What both apps share: the status line, the spectrogram panel, the player.
    (Textual keeps the app's bindings asleep while a dialog is open.)"""

    CSS = _LAYOUT_CSS

    def __init__(self, player: Player) -> None:
        super().__init__()
        self.player = player
        self.last_status = ""

    def say(self, text: str) -> None:
        """Show a one-line outcome in the status line."""
        self.last_status = text
        self.query_one("#status", Static).update(Text(text))

    def show_spectrogram(self, features: F32 | None) -> None:
        spec = self.query_one("#spec", Static)
        if features is None:
            spec.update(Text(""))
            return
        size = spec.content_size
        width = size.width if size.width > 4 else None
        height = size.height if size.height > 2 else None
        spec.update(render_spectrogram(features, width, height))

    async def play(self, audio: Callable[[], tuple[F32, int]]) -> None:
        try:
            sound, rate = await asyncio.to_thread(audio)
        except EditorError as exc:
            self.say(str(exc))
            return
        self.say(self.player.play(sound, rate))

    def on_unmount(self) -> None:
        self.player.close()


class BrowserApp(_EditorApp):
    """Browse a dataset or a sample folder: classes | rows | spectrogram and details."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("p", "play", "play"), Binding("r", "relabel(False)", "relabel"),
        Binding("R", "relabel(True)", "relabel file"), Binding("d", "delete", "delete"),
        Binding("a", "accept", "accept"), Binding("u", "undo", "undo"),
        Binding("s", "save", "save"), Binding("slash", "filter", "filter"),
        Binding("q", "quit_editor", "quit")]

    def __init__(self, browser: Browser, player: Player, start_class: str | None = None) -> None:
        super().__init__(player)
        self.browser = browser
        self.label: str | None = start_class
        self.filter = ""
        self.key: str | None = None

    def compose(self) -> ComposeResult:
        with Horizontal(id="main"):
            yield OptionList(id="classes")
            yield DataTable(id="rows", cursor_type="row", zebra_stripes=True)
            with Vertical(id="right"):
                yield Static(id="spec")
                yield Static(id="details")
        yield Static(id="status")
        yield Footer()

    def on_mount(self) -> None:
        self.title = self.browser.title
        self.query_one("#rows", DataTable).add_columns(*self.browser.columns)
        self.refresh_classes()
        self.query_one("#classes", OptionList).focus()

    # -- lists

    def refresh_classes(self) -> None:
        """Redraw the class list (counts change with every edit) and the rows."""
        classes = self.browser.classes()
        names = [name for name, _ in classes]
        if self.label not in names:
            self.label = names[0] if names else None
        box = self.query_one("#classes", OptionList)
        with box.prevent(OptionList.OptionHighlighted):
            box.clear_options()
            box.add_options([Option(Text(f"{name} ({n})"), id=name) for name, n in classes])
            if self.label is not None:
                box.highlighted = names.index(self.label)
        self.refresh_rows()

    def refresh_rows(self) -> None:
        table = self.query_one("#rows", DataTable)
        at = table.cursor_row
        with table.prevent(DataTable.RowHighlighted):
            table.clear()
            for item in self.browser.items(self.label, self.filter) if self.label else []:
                table.add_row(*(Text(c) for c in item.cells), key=item.key)
        if table.row_count >= MAX_ROWS:
            self.say(f"showing the first {MAX_ROWS} rows: / narrows them")
        if table.row_count:
            table.move_cursor(row=min(at, table.row_count - 1))
            self.show_item(str(table.coordinate_to_cell_key(table.cursor_coordinate)
                               .row_key.value))
        else:
            self.show_item(None)

    def show_item(self, key: str | None) -> None:
        self.key = key
        details = self.query_one("#details", Static)
        if key is None:
            self.show_spectrogram(None)
            details.update(Text("no row" + (f" matches {self.filter!r}" if self.filter else "")))
            return
        try:
            self.show_spectrogram(self.browser.features(key))
            details.update(Text(self.browser.details(key)))
        except EditorError as exc:
            self.show_spectrogram(None)
            details.update(Text(str(exc)))

    def on_option_list_option_highlighted(self, event: OptionList.OptionHighlighted) -> None:
        if event.option_list.id == "classes" and event.option_id != self.label:
            self.label = event.option_id
            table = self.query_one("#rows", DataTable)
            table.move_cursor(row=0)
            self.refresh_rows()

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self.show_item(str(event.row_key.value))

    def on_resize(self) -> None:
        # the key when redrawn: the cursor may have moved meanwhile
        self.call_after_refresh(lambda: self.show_item(self.key))

    # -- actions

    def _run(self, change: Callable[[], str]) -> None:
        try:
            self.say(change())
        except (EditorError, ClassNameError) as exc:
            self.say(str(exc))
            return
        self.refresh_classes()

    async def action_play(self) -> None:
        if self.key is None:
            self.say("no row selected")
            return
        key = self.key
        await self.play(lambda: self.browser.audio(key))

    def action_relabel(self, whole_file: bool) -> None:
        key = self.key
        if key is None:
            self.say("no row selected")
            return
        what = "every window of this file" if whole_file else "this row"
        self.push_screen(
            PromptScreen(f"new class for {what} (a name below, or a new one: "
                         "letters, digits, _, '-' between levels)",
                         self.browser.label_choices()),
            lambda label: self._run(lambda: self.browser.relabel(key, label, whole_file))
            if label else self.say("relabel cancelled"))

    def action_delete(self) -> None:
        key = self.key
        if key is None:
            self.say("no row selected")
            return
        self.push_screen(ConfirmScreen("delete this row?"),
                         lambda yes: self._run(lambda: self.browser.delete(key))
                         if yes else self.say("not deleted"))

    def action_accept(self) -> None:
        key = self.key
        if key is None:
            self.say("no row selected")
            return
        self._run(lambda: self.browser.accept(key))

    def action_undo(self) -> None:
        self._run(self.browser.undo)

    def action_save(self) -> None:
        self._run(self.browser.save)

    def action_filter(self) -> None:
        def apply(text: str | None) -> None:
            if text is not None:
                self.filter = text
                self.sub_title = f"filter: {text}" if text else ""
                self.refresh_rows()

        self.push_screen(PromptScreen("show the rows whose file, source, group or side "
                                      "holds these words (empty: all)", value=self.filter),
                         apply)

    def action_quit_editor(self) -> None:
        if not self.browser.dirty:
            self.exit()
            return
        self.push_screen(ConfirmScreen("unsaved changes: quit without saving?"),
                         lambda yes: self.exit() if yes else self.say("not quit: s saves"))


class ExtractorApp(_EditorApp):
    """Step through a stream window by window and save labelled windows as samples."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("p", "play", "play"), Binding("n", "next", "next"),
        Binding("space", "next", "next", show=False), Binding("b", "back", "back"),
        Binding("l", "label", "label"), Binding("c", "channel", "channel"),
        Binding("u", "undo", "undo"), Binding("q", "quit", "quit"),
        *(Binding(str(k), f"quick_label({k - 1})", show=False) for k in range(1, 10))]
    CSS = _LAYOUT_CSS + "#view { width: 1fr; }  #labels { width: 30; padding: 0 1; }"

    def __init__(self, stepper: StreamStepper, folder: SampleFolder, labels: Sequence[str],
                 player: Player) -> None:
        super().__init__(player)
        self.stepper = stepper
        self.folder = folder
        self.labels = list(labels)
        self.channel = 0
        self._lock = asyncio.Lock()

    def compose(self) -> ComposeResult:
        with Horizontal(id="main"):
            with Vertical(id="view"):
                yield Static(id="spec")
                yield Static(id="details")
            yield Static(id="labels")
        yield Static(id="status")
        yield Footer()

    async def on_mount(self) -> None:
        self.title = f"extract from {self.stepper.origin.source} into {self.folder.root}"
        keys = [f"{k}  {name}" for k, name in enumerate(self.labels[:9], start=1)]
        self.query_one("#labels", Static).update(Text("\n".join(
            ["number key: label as", *keys, "l: any other label"])))
        await self.action_next()

    def show_window(self) -> None:
        win = self.stepper.current
        details = self.query_one("#details", Static)
        if win is None:
            self.show_spectrogram(None)
            details.update(Text("no window"))
            return
        params = self.stepper.params
        mono = win.audio[self.channel][None, :]
        self.show_spectrogram(window_features(mono, params)[0])
        length = self.stepper.duration_s
        of = f" of {length:.1f} s" if length else ""
        details.update(Text(
            f"window {win.index}: {win.start_s:.3f}-{win.start_s + params.window_s:.3f} s{of} "
            f"of {self.stepper.origin.source}, at {sample_time_text(win.time)}\n"
            f"channel {self.channel} of 0-{self.stepper.channels - 1} (c: next channel); "
            f"{params.fmin:g}-{params.fmax:g} Hz on a mel scale, low at the bottom"))

    async def _step(self, move: Callable[[], StreamWindow | None], none: str) -> bool:
        """Move with ``move`` off the event loop; False (and ``none`` said) if it could not."""
        async with self._lock:
            try:
                win = await asyncio.to_thread(move)
            except AudioDecodeError as exc:
                self.say(str(exc))
                return False
        if win is None:
            self.say(none)
        self.show_window()
        return win is not None

    async def action_next(self) -> None:
        await self._step(self.stepper.next, "end of the stream")

    async def action_back(self) -> None:
        await self._step(self.stepper.back, "no earlier window kept")

    def action_channel(self) -> None:
        self.channel = (self.channel + 1) % self.stepper.channels
        self.show_window()

    async def action_play(self) -> None:
        win = self.stepper.current
        if win is not None:
            rate = self.stepper.params.sample_rate
            await self.play(lambda: (win.audio[self.channel], rate))

    async def action_quick_label(self, k: int) -> None:
        if k < len(self.labels):
            await self.save_window(self.labels[k])

    def action_label(self) -> None:
        def chosen(label: str | None) -> None:
            if label:
                self.run_worker(self.save_window(label))

        self.push_screen(PromptScreen("label of this window", self.labels), chosen)

    async def save_window(self, label: str) -> None:
        """Save the current window's channel as a sample of ``label``, then step on."""
        win = self.stepper.current
        if win is None:
            self.say("no window to label")
            return
        try:
            path = self.folder.add(win.audio[self.channel], self.stepper.params.sample_rate,
                                   label, self.stepper.origin.source, self.channel, win.time)
        except (EditorError, ClassNameError) as exc:
            self.say(str(exc))
            return
        if label not in self.labels:
            self.labels.append(label)
        moved = await self._step(self.stepper.next, "")
        self.say(f"saved {path.relative_to(self.folder.root)}"
                 + ("" if moved else "; end of the stream"))

    def action_undo(self) -> None:
        try:
            self.say(self.folder.undo())
        except EditorError as exc:
            self.say(str(exc))

    def on_unmount(self) -> None:
        super().on_unmount()
        self.stepper.close()


def label_choices(*sources: Iterable[str]) -> list[str]:
    """Class names from each source in turn, each once."""
    out: list[str] = []
    for source in sources:
        out += [c for c in source if c not in out]
    return out
