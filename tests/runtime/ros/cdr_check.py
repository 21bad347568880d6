"""Run with the ROS side env's Python (tests/runtime/ros/test_cdr.py does): checks
runtime/ros/cdr.py against rclpy's own serializer on real message classes; prints "ok"."""

from __future__ import annotations

from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import CompressedImage, Image
from vision_msgs.msg import Detection2D, Detection2DArray, ObjectHypothesisWithPose

from runtime.ros import cdr
from runtime.ros.convert import Box2D, MessageTypes, detection_array

TYPES = MessageTypes(Detection2DArray, Detection2D, ObjectHypothesisWithPose)


def check(frame_id: str, n_boxes: int) -> None:
    msg = CompressedImage(format="jpeg", data=b"\xff\xd8" + bytes(range(37)))
    msg.header.frame_id, msg.header.stamp.sec, msg.header.stamp.nanosec = frame_id, 17, 999
    header, fmt, data = cdr.read_compressed(serialize_message(msg))
    assert (header.sec, header.nanosec, header.frame_id) == (17, 999, frame_id), header
    assert fmt == "jpeg" and bytes(data) == bytes(msg.data)
    assert cdr.header_of(msg.header) == header
    boxes = [Box2D(10.5 + i, 20.25, 3.0 * i, 4.0, "c" * (i + 1), 0.125 * i) for i in range(n_boxes)]
    ours = cdr.detection_array_cdr(header, boxes)
    reference = detection_array(msg.header, boxes, TYPES)
    assert deserialize_message(ours, Detection2DArray) == reference, (frame_id, n_boxes)
    assert len(ours) == len(serialize_message(reference)), (frame_id, n_boxes)
    image = Image(height=2, width=3, encoding="rgb8", step=10, data=bytes(range(20)))
    image.header = msg.header
    raw = cdr.read_image(serialize_message(image))
    got = (raw.header, raw.height, raw.width, raw.encoding, raw.step, bytes(raw.data))
    assert got == (header, 2, 3, "rgb8", 10, bytes(range(20))), got


for name in ("", "c", "cam", "cam_0", "camera_ä"):  # every string length modulo 4
    for n in (0, 1, 2, 5):
        check(name, n)
print("ok")
