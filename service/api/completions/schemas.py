"""Schemas of the completions routes: OpenAI's request bodies (fields Tuneline does not use are ignored)."""

from __future__ import annotations

from typing import Any

import marshmallow as ma

ROLES = ("system", "developer", "user", "assistant", "tool")
STRINGS = {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}, "maxItems": 4}]}


class _OpenAIBodySchema(ma.Schema):
    class Meta:
        # The SDK and its ecosystem send sampling fields Tuneline does not use (top_p, user, ...).
        unknown = ma.EXCLUDE

    model = ma.fields.String(required=True, validate=ma.validate.Length(min=1, max=512))
    max_tokens = ma.fields.Integer(allow_none=True, strict=True, validate=ma.validate.Range(1, 32768))
    max_completion_tokens = ma.fields.Integer(
        allow_none=True, strict=True, validate=ma.validate.Range(1, 32768)
    )
    temperature = ma.fields.Float(allow_none=True, validate=ma.validate.Range(0.0, 2.0))
    stop = ma.fields.Raw(allow_none=True, metadata={"description": "A string or up to 4 strings.", **STRINGS})
    n = ma.fields.Integer(allow_none=True, strict=True, validate=ma.validate.Equal(1))
    stream = ma.fields.Boolean(allow_none=True)
    stream_options = ma.fields.Dict(allow_none=True)


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(
        isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str) for p in content
    ):
        return "".join(p["text"] for p in content)
    raise ma.ValidationError("Must be a string or a list of text parts.")


class MessageSchema(ma.Schema):
    class Meta:
        unknown = ma.EXCLUDE

    role = ma.fields.String(required=True, validate=ma.validate.OneOf(ROLES))
    content = ma.fields.Raw(
        required=True,
        allow_none=False,
        metadata={
            "description": "Text, or a list of text parts.",
            "oneOf": [
                {"type": "string"},
                {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "type": {"type": "string", "enum": ["text"]},
                            "text": {"type": "string"},
                        },
                        "required": ["type", "text"],
                    },
                },
            ],
        },
    )
    name = ma.fields.String()

    @ma.validates("content")
    def check_content(self, value: Any, **_: Any) -> None:
        _text_of(value)

    @ma.post_load
    def plain_text(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        return {**data, "content": _text_of(data["content"])}


class ChatCompletionCreateSchema(_OpenAIBodySchema):
    messages = ma.fields.List(
        ma.fields.Nested(MessageSchema), required=True, validate=ma.validate.Length(min=1, max=1024)
    )


class CompletionCreateSchema(_OpenAIBodySchema):
    prompt = ma.fields.Raw(
        required=True,
        metadata={
            "description": "A string or a list of strings.",
            "oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}, "minItems": 1}],
        },
    )
