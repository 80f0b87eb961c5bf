"""The gateway's actors, one module per role, in start order.

Consumers start before producers so that nothing is told to a missing peer on a
clean start; the supervisor stops them in reverse (the reader first).
"""

from actors.detector import Detector
from actors.housekeeper import Housekeeper
from actors.night_flow import NightFlow
from actors.predictor import Predictor
from actors.serial_reader import SerialReader
from actors.trainer import Trainer
from actors.transmitter import Transmitter

ACTOR_CLASSES = (Transmitter, Housekeeper, Trainer, Predictor, Detector, NightFlow, SerialReader)

__all__ = ["ACTOR_CLASSES", "Detector", "Housekeeper", "NightFlow", "Predictor", "SerialReader",
           "Trainer", "Transmitter"]
