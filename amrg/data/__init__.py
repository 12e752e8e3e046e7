"""Data: datasets from R2Gen annotations and user studies (`loading`), the CheXpert-style labeler (`labeler`,
`labeler_rules`, `resources/`), phantom radiographs and their reports (`phantoms`, `report_writer`), and turning
studies into batches (`batching`)."""
