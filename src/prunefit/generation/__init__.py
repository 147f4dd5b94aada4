"""Turn prompts into images with per-prompt seeds, a manifest and a contact sheet."""
