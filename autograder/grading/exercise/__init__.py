"""The only grader code that runs next to a student's code, inside the sandbox.

It executes the assembled notebook cells and then serves the trusted judge: each request names a student
function and the inputs to call it with, and the answer is plain data (JSON and safetensors, see `wire`).
It holds no reference solution, no expected value and no scoring logic, so there is nothing in this
process worth stealing or patching: whatever it sends back is judged by the parent process.

This package imports nothing from the rest of `autograder`; the sandbox mounts it alone.
"""
