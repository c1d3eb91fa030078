"""``python -m crewline.testing``: serve the fake model provider on loopback and print its URL."""

from .fake_server import main

main()
