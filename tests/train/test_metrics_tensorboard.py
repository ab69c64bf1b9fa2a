"""A resumed run's TensorBoard events: the replayed steps are purged (a session-start event at the resumed step)."""

import glob
import struct

from tensorboardX.proto import event_pb2

from pragjax.train.metrics import MetricWriter


def _events(directory):
  out = []
  for path in sorted(glob.glob(f"{directory}/events.out.tfevents.*")):
    data = open(path, "rb").read()
    i = 0
    while i < len(data):  # TFRecord: u64 length, u32 crc, payload, u32 crc
      (n,) = struct.unpack("<Q", data[i:i + 8])
      event = event_pb2.Event()
      event.ParseFromString(data[i + 12:i + 12 + n])
      out.append((path, event))
      i += 12 + n + 4
  return out


def test_resume_purges_the_replayed_steps(tmp_path):
  w = MetricWriter(str(tmp_path))
  for step in range(1, 11):
    w.write(step, {"loss": float(step)})
  w.close()
  w = MetricWriter(str(tmp_path))
  assert w.truncate_after(5) == 5
  for step in range(6, 9):
    w.write(step, {"loss": -float(step)})
  w.close()
  events = _events(tmp_path / "tb")
  files = sorted({p for p, _ in events})
  assert len(files) >= 2
  starts = [e for p, e in events if e.HasField("session_log")]  # only the resumed writer's file, the last by name
  assert {p for p, e in events if e.HasField("session_log")} == {files[-1]}
  assert [(e.session_log.status, e.step) for e in starts] == [(event_pb2.SessionLog.START, 6)]
  # what TensorBoard shows after purging (files in name order): each step once, the replayed ones from the new file
  shown = {}
  for p, e in sorted(events, key=lambda pe: pe[0]):
    if e.HasField("session_log") and e.session_log.status == event_pb2.SessionLog.START:
      shown = {s: v for s, v in shown.items() if s < e.step}
    for v in e.summary.value:
      shown[e.step] = v.simple_value
  assert shown == {**{s: float(s) for s in range(1, 6)}, **{s: -float(s) for s in range(6, 9)}}
  rows = [r["step"] for r in w.rows()]
  assert rows == [1, 2, 3, 4, 5, 6, 7, 8]


def test_no_purge_without_dropped_rows(tmp_path):
  w = MetricWriter(str(tmp_path))
  w.write(1, {"loss": 1.0})
  assert w.truncate_after(1) == 0
  w.close()
  assert not any(e.HasField("session_log") for _, e in _events(tmp_path / "tb"))
