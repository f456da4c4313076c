"""The sample extractor: rules decide which predicted windows become samples
(``policy``); ``service`` reads their audio back from the bus and writes them."""
