"""`make query PROMPT="..."`: one request to the Serve endpoint with the openai client.

python -m cluster.ops.query "Return the" [--chat] [--stream] [--max-tokens N]
"""

from __future__ import annotations

import argparse
import os


def main() -> int:
    from openai import OpenAI

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("prompt")
    parser.add_argument(
        "--base-url", default=os.environ.get("ZERORAY_BASE_URL", "http://127.0.0.1:8000/v1")
    )
    parser.add_argument("--chat", action="store_true", help="use /v1/chat/completions")
    parser.add_argument("--stream", action="store_true")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--temperature", type=float, default=0.8)
    args = parser.parse_args()

    client = OpenAI(base_url=args.base_url, api_key=os.environ.get("ZERORAY_API_KEY", "not-needed"))
    model = client.models.list().data[0].id
    common = dict(
        model=model, max_tokens=args.max_tokens, temperature=args.temperature, stream=args.stream
    )
    if args.chat:
        out = client.chat.completions.create(
            messages=[{"role": "user", "content": args.prompt}], **common
        )
        pieces = (
            ((c.choices[0].delta.content or "") for c in out)
            if args.stream
            else [out.choices[0].message.content]
        )
    else:
        out = client.completions.create(prompt=args.prompt, **common)
        pieces = (c.choices[0].text for c in out) if args.stream else [out.choices[0].text]
    print(args.prompt, end="", flush=True)
    for piece in pieces:
        print(piece, end="", flush=True)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
