"""The editor's dialogs: a question answered with text, a yes/no question."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.suggester import SuggestFromList
from textual.widgets import Input, Label, OptionList
from textual.widgets.option_list import Option


class PromptScreen(ModalScreen[str | None]):
    """A question answered with free text; ``choices`` listed and completed as you type."""

    AUTO_FOCUS = "#answer"
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "cancel")]
    DEFAULT_CSS = """
    PromptScreen { align: center middle; }
    PromptScreen > Vertical { width: 60; height: auto; max-height: 80%;
                              border: thick $accent; background: $surface; padding: 0 1; }
    PromptScreen OptionList { height: auto; max-height: 12; }
    """

    def __init__(self, question: str, choices: Sequence[str] = (), value: str = "") -> None:
        super().__init__()
        self.question, self.choices, self.value = question, list(choices), value

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(Text(self.question))
            yield Input(self.value, id="answer",
                        suggester=SuggestFromList(self.choices) if self.choices else None)
            if self.choices:
                yield OptionList(*(Option(Text(c), id=c) for c in self.choices))

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value.strip())

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option_id)

    def action_cancel(self) -> None:
        self.dismiss(None)


class ConfirmScreen(ModalScreen[bool]):
    """A yes/no question: ``y`` yes, ``n`` or escape no."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "answer(True)", "yes"), Binding("n", "answer(False)", "no"),
        Binding("escape", "answer(False)", "no", show=False)]
    DEFAULT_CSS = """
    ConfirmScreen { align: center middle; }
    ConfirmScreen > Label { width: 60; border: thick $warning; background: $surface;
                            padding: 1 2; }
    """

    def __init__(self, question: str) -> None:
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        yield Label(Text(f"{self.question}  (y/n)"))

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)
