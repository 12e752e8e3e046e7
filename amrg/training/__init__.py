"""Training: the loop both stages share (`loop`), stage 1 (`stage1`), stage 2 (`stage2`), the offline LLM stand-in
(`language_model`) and the whole tiny pipeline on phantoms (`pipeline`)."""
