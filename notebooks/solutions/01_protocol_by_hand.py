"""Solutions to the exercises of notebook 01, the protocol by hand.

Run it on its own (``python notebooks/solutions/01_protocol_by_hand.py``) or paste a part
into the notebook.
"""

import socket

from metrics_lab import serve_in_background


def read_answers(sock: socket.socket, count: int) -> bytes:
    """Receive until ``count`` answers (each ends with an empty line) have arrived."""
    data = b""
    while data.count(b"\n\n") < count:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError(f"connection closed after {data!r}")
        data += chunk
    return data


# In a with block the server stops and the socket closes at its end, as the notebook's
# server.stop() and sock.close() do.
with serve_in_background() as server, socket.create_connection(server.address, 5) as sock:
    # 1. Four requests in one send get four answers, in order. Each answer ends with "\n\n"
    #    and no data line is ever empty, so counting "\n\n" counts answers.
    sock.sendall(b"put a 1 1501864247\nput a 2 1501864248\nput b 3 1501864247\nget *\n")
    print(read_answers(sock, 4))
    # -> b'ok\n\nok\n\nok\n\nok\na 1.0 1501864247\na 2.0 1501864248\nb 3.0 1501864247\n\n'

    # 2. Both are wrong commands: a value must be a finite number ("nan" is not), and "*"
    #    cannot be a key because "get *" means "every key".
    for request in [b"put palm.cpu nan 1501864247\n", b"put * 1 1501864247\n"]:
        sock.sendall(request)
        print(request, "->", read_answers(sock, 1))  # b'error\nwrong command\n\n' twice

    # 3. One byte per sendall: the server buffers the partial line until the "\n" arrives,
    #    so the point is stored exactly as if it had been sent at once.
    for byte in b"put palm.cpu 1 1501864247\n":
        sock.sendall(bytes([byte]))
    print(read_answers(sock, 1))  # b'ok\n\n'
    sock.sendall(b"get palm.cpu\n")
    print(read_answers(sock, 1))  # b'ok\npalm.cpu 1.0 1501864247\n\n'
