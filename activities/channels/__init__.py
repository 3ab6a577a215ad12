"""Message channels: one adapter per provider behind `base.ChannelAdapter`, sent through the
outbox."""
