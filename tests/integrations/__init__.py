"""Tests of the framework integrations beyond pydantic-ai (OpenAI Agents SDK, ...)."""
