"""Which adapter serves which wire dialect. Adapters are imported when a catalogue first uses
their dialect, so a deployment that never talks to Bedrock never loads botocore."""

from __future__ import annotations

import importlib

import aiohttp

from providers.base import Provider

ADAPTERS: dict[str, str] = {
    "openai_responses": "providers.openai_responses:OpenAIResponsesProvider",
    "openai_chat": "providers.openai_chat:OpenAIChatProvider",
    "anthropic": "providers.anthropic:AnthropicProvider",
    "gemini": "providers.gemini:GeminiProvider",
    "bedrock": "providers.bedrock:BedrockProvider",
    "cohere": "providers.cohere:CohereProvider",
    "ollama": "providers.ollama:OllamaProvider",
}
"""Dialect -> ``module:class``; the class takes the worker's aiohttp session."""


def load_providers(dialects: set[str], session: aiohttp.ClientSession) -> dict[str, Provider]:
    providers: dict[str, Provider] = {}
    for dialect in sorted(dialects):
        module_name, _, class_name = ADAPTERS[dialect].partition(":")
        factory = getattr(importlib.import_module(module_name), class_name)
        providers[dialect] = factory(session)
    return providers
