"""Upload a model folder to the Hugging Face Hub (`amrg push`)."""

from __future__ import annotations

import os

from huggingface_hub import HfApi


def push_model_folder(folder: str | os.PathLike, repo_id: str, private: bool = False,
                      message: str = "Upload AM-MRG model") -> str:
    """Create `repo_id` if needed and upload `folder`; returns the commit URL.

    Deliberately thin: one `huggingface_hub` call. It needs the Hub, so the offline tests exercise only its refusal
    of a folder that is not a model folder with a model card."""
    folder = os.fspath(folder)
    if not all(os.path.isfile(os.path.join(folder, name)) for name in ("config.json", "README.md")):
        raise ValueError(f"{folder} is not a model folder with a model card (config.json and README.md)")
    api = HfApi()
    api.create_repo(repo_id, private=private, exist_ok=True)
    return str(api.upload_folder(folder_path=folder, repo_id=repo_id, commit_message=message))


__all__ = ["push_model_folder"]
