"""Content parts shared by input items, output items and streaming events.

One Struct per part type, tagged on ``type``. A part used both in requests and in replies
(``output_text``, ``input_image``) is one Struct whose defaults make the request form lenient
and whose encoding always satisfies the stricter reply schema: defaults are encoded, and only
``UNSET`` fields (absent on the wire) are left out.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType

TEN_MIB = 10 * 1024 * 1024
TWENTY_MIB = 20 * 1024 * 1024
THIRTY_TWO_MIB = 32 * 1024 * 1024

LongText = Annotated[str, Meta(max_length=TEN_MIB)]
ImageDetail = Literal["low", "high", "auto"]


class _Part(Struct, tag_field="type", kw_only=True):
    pass


class InputText(_Part, tag="input_text"):
    text: LongText


class InputImage(_Part, tag="input_image"):
    # Both keys are required in replies; the defaults make them optional in requests.
    image_url: Annotated[str, Meta(max_length=TWENTY_MIB)] | None = None
    detail: ImageDetail = "auto"
    file_id: str | UnsetType = UNSET  # OpenAI extension, forwarded to OpenAI upstreams only


class InputFile(_Part, tag="input_file"):
    filename: str | UnsetType | None = UNSET
    file_data: Annotated[str, Meta(max_length=THIRTY_TWO_MIB)] | UnsetType | None = UNSET
    file_url: str | UnsetType | None = UNSET
    file_id: str | UnsetType = UNSET


class InputVideo(_Part, tag="input_video"):
    video_url: str


class UrlCitation(Struct, tag_field="type", tag="url_citation", kw_only=True):
    url: str
    start_index: Annotated[int, Meta(ge=0)]
    end_index: Annotated[int, Meta(ge=0)]
    title: str


class TopLogProb(Struct, kw_only=True):
    token: str
    logprob: float
    bytes: list[int]


class LogProb(Struct, kw_only=True):
    token: str
    logprob: float
    bytes: list[int]
    top_logprobs: list[TopLogProb] = msgspec.field(default_factory=list)


class OutputText(_Part, tag="output_text"):
    text: LongText
    annotations: list[UrlCitation] = msgspec.field(default_factory=list)
    logprobs: list[LogProb] | UnsetType = UNSET


class Text(_Part, tag="text"):
    text: str


class SummaryText(_Part, tag="summary_text"):
    text: str


class ReasoningText(_Part, tag="reasoning_text"):
    text: str


class Refusal(_Part, tag="refusal"):
    refusal: LongText


ContentPart = (
    InputText | InputImage | InputFile | InputVideo | OutputText | Text | SummaryText | ReasoningText | Refusal
)
"""Any content part the spec defines; which are allowed where is checked by the consumers."""
