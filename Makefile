# Thin aliases for `bash run …` (which also works where make is not installed).
.PHONY: setup demo test lint bench
setup demo lint bench:
	bash run $@
test:
	bash run test
