"""The device side of compress: the agent, one backend per runtime, and the targets that carry the
agent to a device. It imports nothing from the rest of compress, so the folder can be copied to a
board and run there with numpy and one runtime (see agent.py)."""
