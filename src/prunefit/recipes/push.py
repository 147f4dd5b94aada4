"""``prunefit push``: upload a folder to the Hugging Face Hub with its model card (written first when absent)."""

from __future__ import annotations

from pathlib import Path

from prunefit.errors import ConfigError
from prunefit.models.card import CARD, write_card


def main(folder: str, repo_id: str, private: bool = False) -> list[str]:
    """Create ``repo_id`` (a model repository; kept if it exists) and upload ``folder`` to it; a folder without a
    ``README.md`` gets its card first. Needs network access and a token (``huggingface-cli login`` or HF_TOKEN)."""
    from huggingface_hub import HfApi

    path = Path(folder)
    if not path.is_dir():
        raise ConfigError(f"{folder} is not a folder; pass a prunefit output or `prunefit export` folder")
    if not (path / CARD).is_file():
        write_card(path)
    api = HfApi()
    url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    api.upload_folder(repo_id=repo_id, folder_path=str(path), repo_type="model",
                      ignore_patterns=["checkpoints/*", "tensorboard/*", ".*"])
    return [f"uploaded {path} -> {url}"]
