"""Library code around the AM-MRG model: tokenizer training, assembly from pretrained parts, export, command line.

Nothing here is shipped with a model folder; the shipped code is the `modeling_amrg` package."""
