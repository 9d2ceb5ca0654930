"""The text modality's models: the report tokenizer, the BERT prompt encoder C_text, the
Optimus-style text VAE (BERT encoder, GPT-2 decoder) and the fully connected text diffuser."""
