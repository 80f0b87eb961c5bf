"""The gateway's actors, one module per role, in start order.

Consumers start before producers so that nothing is told to a missing peer on a
clean start; the supervisor stops them in reverse (the reader first).
"""

from actors.base import GatewayActor
from actors.detector import Detector
from actors.housekeeper import Housekeeper
from actors.night_flow import NightFlow
from actors.predictor import Predictor
from actors.serial_reader import SerialReader
from actors.trainer import Trainer
from actors.transmitter import Transmitter
from core.config import Config

ACTOR_CLASSES = (Transmitter, Housekeeper, Trainer, Predictor, Detector, NightFlow, SerialReader)


def actor_classes(config: Config) -> tuple[type[GatewayActor], ...]:
    """The actors of this site's service: the MQTT uplink beside the serial one when on."""
    if not config.mqtt.enabled:
        return ACTOR_CLASSES
    from actors.mqtt_publisher import MqttPublisher  # paho only where MQTT is used

    return (Transmitter, MqttPublisher, *ACTOR_CLASSES[1:])

__all__ = ["ACTOR_CLASSES", "actor_classes", "Detector", "Housekeeper", "NightFlow", "Predictor", "SerialReader",
           "Trainer", "Transmitter"]
