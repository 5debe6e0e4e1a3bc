"""Starling demo: chat with Starling-LM and watch a Starling reward model rank the replies."""
