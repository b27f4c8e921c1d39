"""Interactions: every bug report, feedback post, chat, survey answer or replay a user submits."""
