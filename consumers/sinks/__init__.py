"""Outbound sinks: the bus's detections and channel levels sent to other systems.

Each sink is its own process with its own durable consumer on the EVENTS stream
(``bus_schemas.streams.SINK_*``), at least once: a message is acked only after the
other side confirmed it, and a failure there is retried with a capped exponential
backoff (``TransientError`` → ``nak``) for as long as it lasts.

- ``webhook``: ``Prediction`` → signed JSON batches POSTed to one URL
  (``python -m consumers.sinks.webhook``);
- ``mqtt``: ``Prediction`` and ``ChannelHealth`` → MQTT with Home Assistant
  discovery (``python -m consumers.sinks.mqtt``);
- ``detections``: what a prediction says to the outside (its decided labels and
  their confidences, times in ISO UTC) and the filters on it, shared by both.

With privacy on (``TIDZAM_PRIVACY=mask``), a private window
(``consumers.privacy.is_private``) is never sent by any sink.
"""
