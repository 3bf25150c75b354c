"""Per-record checks for prompt/completion, chat, preference (DPO) and reinforcement examples."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

ERROR = "error"
WARNING = "warning"
INFO = "info"

PROMPT_COMPLETION = "prompt_completion"
CHAT = "chat"
PREFERENCE = "preference"
# OpenAI's reinforcement rows: `messages` ending on the user's turn (the model answers it), plus
# any fields the grader reads as `{{item.<field>}}`.
REINFORCEMENT = "reinforcement"

PC_KEYS = frozenset({"prompt", "completion"})
CHAT_KEYS = frozenset({"messages", "tools", "functions", "parallel_tool_calls"})
PREFERENCE_KEYS = frozenset({"input", "preferred_output", "non_preferred_output"})
INPUT_KEYS = frozenset({"messages", "tools", "parallel_tool_calls"})
MESSAGE_KEYS = frozenset({"role", "content", "name", "weight", "function_call", "tool_calls", "tool_call_id"})
ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})


@dataclass(slots=True)
class Issue:
    """A finding about one record, before the engine adds its line number."""

    code: str
    severity: str
    field: str | None
    message: str


@dataclass(slots=True)
class Checked:
    """A record after checking: its kind, its issues and the normalised example."""

    kind: str | None
    issues: list[Issue] = field(default_factory=list)
    prompt: str = ""
    completion: str = ""
    value: dict[str, Any] | None = None
    empty: bool = False  # only whitespace where text is required: dropped by the `empty` fix
    unknown_keys: tuple[str, ...] = ()

    @property
    def has_error(self) -> bool:
        return any(i.severity == ERROR for i in self.issues)


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {dict: "object", list: "array", str: "string", bool: "boolean"}.get(
        type(value), "number" if isinstance(value, int | float) else type(value).__name__
    )


def detect_kind(value: dict[str, Any]) -> str | None:
    """Format of one object, by its keys."""
    if "messages" in value:
        return CHAT
    if not PREFERENCE_KEYS.isdisjoint(value):
        return PREFERENCE
    if not PC_KEYS.isdisjoint(value):
        return PROMPT_COMPLETION
    return None


def ends_on_user(value: dict[str, Any]) -> bool:
    """A `messages` row whose last message is the user's: a reinforcement prompt, not a chat example."""
    messages = value.get("messages")
    last = messages[-1] if isinstance(messages, list) and messages else None
    return isinstance(last, dict) and last.get("role") == "user"


def check_value(value: Any, messages_kind: str | None = None) -> Checked:
    """All structural checks for one parsed record.

    A `messages` row is checked as ``messages_kind`` (CHAT or REINFORCEMENT) when it is given
    (the file's or the job's format), else as reinforcement when it ends on a user message.
    """
    if not isinstance(value, dict):
        hint = ""
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            hint = " (a JSON array of examples: put one example per line)"
        return Checked(
            None,
            [Issue("not_object", ERROR, None, f"expected a JSON object, got {_type_name(value)}{hint}")],
        )
    kind = detect_kind(value)
    if kind == PROMPT_COMPLETION:
        return _check_prompt_completion(value)
    if kind == CHAT:
        if messages_kind == REINFORCEMENT or (messages_kind is None and ends_on_user(value)):
            return _check_reinforcement(value)
        return _check_chat(value)
    if kind == PREFERENCE:
        return _check_preference(value)
    keys = ", ".join(sorted(map(str, value))) or "none"
    return Checked(
        None,
        [
            Issue(
                "missing_key",
                ERROR,
                None,
                "expected `prompt`/`completion`, `messages`, or `input`/`preferred_output`/"
                f"`non_preferred_output`; found keys: {keys}",
            )
        ],
    )


def _unknown(value: dict[str, Any], allowed: frozenset[str], prefix: str = "") -> list[Issue]:
    return [
        Issue("unknown_key", WARNING, f"{prefix}{k}", f"unknown key `{k}` is ignored and dropped")
        for k in value
        if k not in allowed
    ]


def _check_prompt_completion(value: dict[str, Any]) -> Checked:
    out = Checked(PROMPT_COMPLETION)
    texts: dict[str, str] = {}
    for key in ("prompt", "completion"):
        if key not in value:
            out.issues.append(Issue("missing_key", ERROR, key, f"missing `{key}`"))
            continue
        text = value[key]
        if not isinstance(text, str):
            out.issues.append(
                Issue("wrong_type", ERROR, key, f"`{key}` must be a string, got {_type_name(text)}")
            )
            continue
        texts[key] = text
        if not text.strip():
            out.empty = True
            what = "empty" if not text else "whitespace only"
            out.issues.append(Issue("empty_field", WARNING, key, f"`{key}` is {what}"))
    extra = _unknown(value, PC_KEYS)
    out.issues.extend(extra)
    out.unknown_keys = tuple(i.field for i in extra if i.field)
    out.prompt = texts.get("prompt", "")
    out.completion = texts.get("completion", "")
    return out


def check_messages(messages: Any, path: str, out: Checked, need_assistant: bool = True) -> None:
    """OpenAI's chat data-preparation checks, one issue per problem with its field path."""
    if not isinstance(messages, list):
        if messages is None:
            out.issues.append(Issue("missing_messages_list", ERROR, path, f"`{path}` is missing"))
        else:
            out.issues.append(
                Issue(
                    "wrong_type",
                    ERROR,
                    path,
                    f"`{path}` must be a list of messages, got {_type_name(messages)}",
                )
            )
        return
    if not messages:
        out.issues.append(Issue("missing_messages_list", ERROR, path, f"`{path}` is empty"))
        return
    has_assistant = False
    for i, message in enumerate(messages):
        where = f"{path}[{i}]"
        if not isinstance(message, dict):
            out.issues.append(
                Issue("wrong_type", ERROR, where, f"a message must be an object, got {_type_name(message)}")
            )
            continue
        role = message.get("role")
        calls = message.get("tool_calls") or message.get("function_call")
        if "role" not in message:
            out.issues.append(Issue("message_missing_key", ERROR, f"{where}.role", "message has no `role`"))
        if "content" not in message and not calls:
            out.issues.append(
                Issue("message_missing_key", ERROR, f"{where}.content", "message has no `content`")
            )
        for key in message:
            if key not in MESSAGE_KEYS:
                out.issues.append(
                    Issue(
                        "message_unrecognized_key",
                        ERROR,
                        f"{where}.{key}",
                        f"message key `{key}` is not recognised",
                    )
                )
        if "role" in message and role not in ROLES:
            out.issues.append(
                Issue("unrecognized_role", ERROR, f"{where}.role", f"role `{role}` is not recognised")
            )
        if role == "assistant":
            has_assistant = True
        if "content" in message:
            content = message["content"]
            if content is None and calls:
                pass
            elif isinstance(content, list):
                if not content:
                    out.issues.append(
                        Issue("missing_content", ERROR, f"{where}.content", "message content is empty")
                    )
            elif not isinstance(content, str) or not content:
                out.issues.append(
                    Issue(
                        "missing_content",
                        ERROR,
                        f"{where}.content",
                        "message content must be a non-empty string"
                        + ("" if isinstance(content, str) else f", got {_type_name(content)}"),
                    )
                )
            elif not content.strip():
                out.empty = True
                out.issues.append(
                    Issue("empty_field", WARNING, f"{where}.content", "message content is whitespace only")
                )
        if "weight" in message:
            weight = message["weight"]
            if weight not in (0, 1) or isinstance(weight, bool):
                out.issues.append(Issue("wrong_type", ERROR, f"{where}.weight", "`weight` must be 0 or 1"))
            elif role != "assistant":
                out.issues.append(
                    Issue(
                        "unknown_key",
                        WARNING,
                        f"{where}.weight",
                        "`weight` only applies to assistant messages",
                    )
                )
        if "name" in message and not isinstance(message["name"], str):
            out.issues.append(Issue("wrong_type", ERROR, f"{where}.name", "`name` must be a string"))
    if need_assistant and not has_assistant:
        out.issues.append(Issue("missing_assistant_message", ERROR, path, "example has no assistant message"))


def _check_chat(value: dict[str, Any]) -> Checked:
    out = Checked(CHAT, value=value)
    check_messages(value.get("messages"), "messages", out)
    extra = _unknown(value, CHAT_KEYS)
    out.issues.extend(extra)
    out.unknown_keys = tuple(i.field for i in extra if i.field)
    for key in ("tools", "functions"):
        if key in value and not isinstance(value[key], list):
            out.issues.append(Issue("wrong_type", ERROR, key, f"`{key}` must be a list"))
    return out


def _check_reinforcement(value: dict[str, Any]) -> Checked:
    """Chat checks without the assistant reply; other top-level keys are the grader's fields."""
    out = Checked(REINFORCEMENT, value=value)
    messages = value.get("messages")
    check_messages(messages, "messages", out, need_assistant=False)
    if isinstance(messages, list) and messages and not ends_on_user(value):
        out.issues.append(
            Issue(
                "reinforcement_last_message",
                ERROR,
                f"messages[{len(messages) - 1}].role",
                "a reinforcement example ends on a user message (the model answers it), "
                "not on an assistant reply",
            )
        )
    for key in ("tools", "functions"):
        if key in value and not isinstance(value[key], list):
            out.issues.append(Issue("wrong_type", ERROR, key, f"`{key}` must be a list"))
    return out


def _check_preference(value: dict[str, Any]) -> Checked:
    out = Checked(PREFERENCE, value=value)
    for key in ("input", "preferred_output", "non_preferred_output"):
        if key not in value:
            out.issues.append(Issue("missing_key", ERROR, key, f"missing `{key}`"))
    inp = value.get("input")
    if "input" in value:
        if not isinstance(inp, dict):
            out.issues.append(
                Issue("wrong_type", ERROR, "input", f"`input` must be an object, got {_type_name(inp)}")
            )
        else:
            check_messages(inp.get("messages"), "input.messages", out, need_assistant=False)
            out.issues.extend(_unknown(inp, INPUT_KEYS, "input."))
            msgs = inp.get("messages")
            last = msgs[-1] if isinstance(msgs, list) and msgs else None
            if isinstance(last, dict) and last.get("role") not in ("user", "tool"):
                out.issues.append(
                    Issue(
                        "preference_input",
                        ERROR,
                        "input.messages",
                        "the last input message must be from the user",
                    )
                )
    for key in ("preferred_output", "non_preferred_output"):
        if key not in value:
            continue
        outputs = value[key]
        if not isinstance(outputs, list) or len(outputs) != 1:
            out.issues.append(
                Issue(
                    "preference_output",
                    ERROR,
                    key,
                    f"`{key}` must be a list with exactly one assistant message",
                )
            )
            continue
        check_messages(outputs, key, out)
        if isinstance(outputs[0], dict) and outputs[0].get("role") not in (None, "assistant"):
            out.issues.append(
                Issue("preference_output", ERROR, f"{key}[0].role", f"`{key}` must be an assistant message")
            )
    if isinstance(value.get("preferred_output"), list) and value.get("preferred_output") == value.get(
        "non_preferred_output"
    ):
        out.issues.append(
            Issue(
                "preference_identical",
                ERROR,
                "non_preferred_output",
                "preferred and non-preferred outputs are identical",
            )
        )
    extra = _unknown(value, PREFERENCE_KEYS)
    out.issues.extend(extra)
    out.unknown_keys = tuple(i.field for i in extra if i.field)
    return out
