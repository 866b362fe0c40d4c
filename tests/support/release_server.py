#!/usr/bin/env python3
"""A DOUBLE of how a Forgejo 9.x instance serves release attachments, for the
guildhall-image action's tests. Written from Forgejo's
routers/web/repo/repo.go (RedirectDownload) and routers/web/repo/attachment.go
(ServeAttachment):

  GET /OWNER/REPO/releases/download/TAG/NAME
    -> 200 with the file (Content-Disposition: attachment; filename=NAME,
       Last-Modified, ETag "UUID"), as Forgejo's local attachment storage does;
    -> with --serve-direct: 302 to the object storage URL (here
       /storage/attachments/UUID on the same server), as Forgejo does with
       [storage] SERVE_DIRECT (and for an attachment with an external URL);
    -> 404 when the release (tag) or the attachment name is unknown, and for
       anything else (Forgejo answers 404 for a private repository too).

DIR holds the releases as DIR/OWNER/REPO/releases/download/TAG/NAME. Every
request is logged to --log as one JSON line: method, path, status.
Run: release_server.py --dir DIR [--port 0] --port-file FILE --log FILE
"""
import argparse
import email.utils
import hashlib
import http.server
import json
import os
import re
import sys
import urllib.parse

DOWNLOAD = re.compile(r"^/([^/]+)/([^/]+)/releases/download/([^/]+)/([^/]+)$")
STORAGE = re.compile(r"^/storage/attachments/([0-9a-f]{32})$")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", required=True)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--port-file", required=True)
    ap.add_argument("--log", required=True)
    ap.add_argument("--serve-direct", action="store_true")
    args = ap.parse_args()
    root = os.path.realpath(args.dir)
    uuids = {}  # uuid -> file path, for --serve-direct

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

        def log(self, status):
            with open(args.log, "a") as f:
                f.write(json.dumps({"method": self.command, "path": self.path, "status": status}) + "\n")

        def not_found(self):
            body = b"Not found.\n"
            self.send_response(404)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
            self.log(404)

        def serve_file(self, path, name):
            st = os.stat(path)
            uuid = hashlib.md5(path.encode()).hexdigest()
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(st.st_size))
            self.send_header("Content-Disposition", "attachment; filename=\"%s\"" % name)
            self.send_header("Last-Modified", email.utils.formatdate(st.st_mtime, usegmt=True))
            self.send_header("ETag", '"%s"' % uuid)
            self.end_headers()
            if self.command != "HEAD":
                with open(path, "rb") as f:
                    while True:
                        chunk = f.read(1 << 16)
                        if not chunk:
                            break
                        self.wfile.write(chunk)
            self.log(200)

        def do_GET(self):
            path = urllib.parse.urlsplit(self.path).path
            m = DOWNLOAD.match(path)
            if m:
                parts = [urllib.parse.unquote(p) for p in m.groups()]
                if any(p in (".", "..") or "/" in p for p in parts):
                    return self.not_found()
                owner, repo, tag, name = parts
                f = os.path.join(root, owner, repo, "releases", "download", tag, name)
                if not os.path.isfile(f):
                    return self.not_found()
                if args.serve_direct:
                    uuid = hashlib.md5(f.encode()).hexdigest()
                    uuids[uuid] = (f, name)
                    self.send_response(302)
                    self.send_header("Location", "/storage/attachments/" + uuid)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return self.log(302)
                return self.serve_file(f, name)
            m = STORAGE.match(path)
            if m and m.group(1) in uuids:
                return self.serve_file(*uuids[m.group(1)])
            return self.not_found()

        do_HEAD = do_GET

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    tmp = args.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(srv.server_address[1]))
    os.rename(tmp, args.port_file)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
