"""The program's nodes: each builds its own objects in its own process from the plain config
it is given, drives a loop (`launch.loops`), talks to the others over RPC, and returns
from `run()` when the program stops."""
