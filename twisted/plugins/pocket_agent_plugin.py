from twisted.application.service import ServiceMaker

pocket_agent = ServiceMaker(
    "Pocket Agent Server",
    "pocket_agent.tap",
    "Drive the Claude Code CLI on this machine from a phone over a TLS WebSocket.",
    "pocket-agent",
)
