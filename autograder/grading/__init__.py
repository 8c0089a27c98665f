"""Grading a class: the CLI (`cli`), one submission's steps (`judge`: read -> assemble -> execute -> judge),
the sandbox (`sandbox`, bubblewrap), the judge's handle on the sandboxed code (`remote`), what runs inside the
sandbox (`exercise/`, mounted there alone), the submission file (`submission`) and the grading JSON (`result`).
"""
