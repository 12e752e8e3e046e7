"""Models as folders: presets and locally trained tokenizers (`presets`, `tokenizer`, `tiny_corpus`), assembly from
pretrained parts (`assemble`), writing and loading model folders (`export`, `loading`), the model card
(`model_card`) and the upload (`push`)."""
