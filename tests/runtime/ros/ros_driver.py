"""Test driver, run with the ROS side env's Python: publishes PNG frames on a camera topic
and records the Detection2DArray answers the bridge publishes for them.

    python ros_driver.py FRAMES_DIR MODE IN_TOPIC OUT_TOPIC RESULT_JSON

MODE "compressed": each PNG file's bytes as a sensor_msgs/CompressedImage (format "png");
"image": its pixels as a sensor_msgs/Image (bgr8) ; "image-rgb8": as rgb8. Closed loop:
frame i (stamp 1000 + i s, i us; frame_id "cam_test") is published, then the driver waits
for its answer (re-publishing up to 3 times: best-effort delivery may lose one).
Writes [{"index", "stamp": [sec, nanosec], "frame_id", "det_headers", "boxes": [[x1, y1,
x2, y2, class_id, score], ...]}, ...].
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import cv2
import rclpy
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image
from vision_msgs.msg import Detection2DArray

WAIT_S = 3.0


def make_message(path: Path, mode: str, index: int):
    if mode == "compressed":
        msg = CompressedImage(format="png", data=path.read_bytes())
    else:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if mode == "image-rgb8":
            image, encoding = image[:, :, ::-1].copy(), "rgb8"
        else:
            encoding = "bgr8"
        h, w = image.shape[:2]
        msg = Image(height=h, width=w, encoding=encoding, step=w * 3, data=image.tobytes())
    msg.header.stamp.sec = 1000 + index
    msg.header.stamp.nanosec = index * 1000
    msg.header.frame_id = "cam_test"
    return msg


def record(answer: Detection2DArray, index: int) -> dict:
    boxes = []
    for d in answer.detections:
        c, sx, sy = d.bbox.center.position, d.bbox.size_x, d.bbox.size_y
        (hyp,) = d.results
        x1, y1 = c.x - sx / 2, c.y - sy / 2
        boxes.append([x1, y1, x1 + sx, y1 + sy, hyp.hypothesis.class_id, hyp.hypothesis.score])
    return {
        "index": index,
        "stamp": [answer.header.stamp.sec, answer.header.stamp.nanosec],
        "frame_id": answer.header.frame_id,
        "det_headers": [
            [d.header.stamp.sec, d.header.stamp.nanosec, d.header.frame_id]
            for d in answer.detections
        ],
        "boxes": boxes,
    }


def main(frames_dir: str, mode: str, in_topic: str, out_topic: str, out: str) -> int:
    rclpy.init()
    node = rclpy.create_node("understudy_test_driver")
    msg_type = CompressedImage if mode == "compressed" else Image
    pub = node.create_publisher(msg_type, in_topic, qos_profile_sensor_data)
    answers: dict[tuple[int, int], Detection2DArray] = {}
    node.create_subscription(
        Detection2DArray,
        out_topic,
        lambda m: answers.setdefault((m.header.stamp.sec, m.header.stamp.nanosec), m),
        10,
    )
    deadline = time.monotonic() + 60
    while pub.get_subscription_count() < 1 or node.count_publishers(out_topic) < 1:
        rclpy.spin_once(node, timeout_sec=0.1)
        if time.monotonic() > deadline:
            print("the bridge did not appear on the graph", file=sys.stderr)
            return 1
    results = []
    for index, path in enumerate(sorted(Path(frames_dir).glob("*.png"))):
        msg = make_message(path, mode, index)
        key = (msg.header.stamp.sec, msg.header.stamp.nanosec)
        for _attempt in range(3):
            pub.publish(msg)
            end = time.monotonic() + WAIT_S
            while key not in answers and time.monotonic() < end:
                rclpy.spin_once(node, timeout_sec=0.05)
            if key in answers:
                results.append(record(answers[key], index))
                break
        else:
            print(f"no answer for frame {index} ({path.name})", file=sys.stderr)
            return 1
    Path(out).write_text(json.dumps(results))
    node.destroy_node()
    rclpy.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:6]))
