"""The standalone C program: a Relax module lowered to a straight-line program, placed in static arenas, written as a C project."""
