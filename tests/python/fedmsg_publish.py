"""Publishes messages with the real fedmsg library (fedmsg.core.FedMsgContext, the
object behind fedmsg.publish), for fedhub's interoperability tests.

    python fedmsg_publish.py CONFIG_FILE SPEC_JSON

CONFIG_FILE is a fedmsg config file (a Python file defining `config`), read the
way `fedmsg-logger --config-filename` reads one. SPEC_JSON is
{"messages": [{"topic": ..., "modname": ..., "msg": ...}, ...], "probe": bool}.

Protocol on stdout, one JSON object per line:
  {"event": "ready", "endpoint": ADDR}    the publisher is bound or connected
  {"event": "sent", "frames": [TOPIC, BODY]}   exactly the frames fedmsg sent
  {"event": "done"}
With "probe": true, after "ready" the script publishes `<prefix>.<env>.probe.tick`
messages every 50 ms until a line arrives on stdin, so the caller can wait until
its subscriber really receives before the messages that count are sent.
"""

import json
import select
import sys
import time

import fedmsg.config
import fedmsg.core


def emit(event):
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def main():
    config_file, spec = sys.argv[1], json.loads(sys.argv[2])
    config = fedmsg.config.load_config([], None, filenames=[config_file], invalidate_cache=True)
    context = fedmsg.core.FedMsgContext(**config)
    publisher = context.publisher
    endpoint = publisher.getsockopt(fedmsg.core.zmq.LAST_ENDPOINT).decode()

    sent = []
    send_multipart = publisher.send_multipart

    def recording_send_multipart(frames, *args, **kwargs):
        sent.append([f.decode("utf-8") if isinstance(f, bytes) else f for f in frames])
        return send_multipart(frames, *args, **kwargs)

    publisher.send_multipart = recording_send_multipart
    emit({"event": "ready", "endpoint": endpoint})

    if spec.get("probe"):
        while not select.select([sys.stdin], [], [], 0.05)[0]:
            context.publish(topic="tick", modname="probe", msg={})
        sys.stdin.readline()
        sent.clear()

    for message in spec["messages"]:
        context.publish(topic=message["topic"], modname=message["modname"], msg=message["msg"])
    for frames in sent:
        emit({"event": "sent", "frames": frames})
    # Let ZeroMQ flush before the socket goes away.
    time.sleep(0.5)
    context.destroy()
    emit({"event": "done"})


if __name__ == "__main__":
    main()
