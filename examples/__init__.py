"""Applications built on the vitlut library; each has its own readme."""
