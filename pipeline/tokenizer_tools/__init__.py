"""Tokenizer tools over the same input stages as a job: `tokenmill train-tokenizer`
(`train_tokenizer`), `tokenmill eval` (`evaluate`) and `tokenmill preview` (`preview`)."""
