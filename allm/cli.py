"""The ``allm`` command line (also ``python -m allm``).

::

    allm chat "What is the capital of France?"                 # streams the answer
    allm chat --provider local "What is the capital of France?" # a local model, no key
    allm chat --base-url http://127.0.0.1:8080/v1 --model smollm2 "Hi"
    allm models --provider openai
    allm local-server --port 8080                               # run llama-server in the foreground
    allm serve --config server.toml --port 8000                 # the Open Responses server

Which provider, when ``--provider`` is not given: ``--base-url`` means an
OpenAI-compatible server; otherwise ``$ALLM_PROVIDER``; otherwise ``openai`` when
``OPENAI_API_KEY`` is set; otherwise ``local`` when the local model is installed.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterator, Sequence
from typing import Any, TextIO

from . import api, codec
from .engine import Engine
from .errors import AllmError
from .events import Error, MessageCompleted, ReasoningDelta, TextDelta
from .fold import Collector
from .ids import new_request_id
from .providers import registry
from .types import Message, request, system, user

PROVIDERS = registry.names()

NOTHING_CONFIGURED = (
    "allm: no provider is configured. Do one of:\n"
    "  - set OPENAI_API_KEY (or ANTHROPIC_API_KEY / GEMINI_API_KEY with --provider anthropic / gemini);\n"
    "  - pass --base-url of an OpenAI-compatible server (llama.cpp, Ollama, vLLM) and --model;\n"
    "  - install the local model with scripts/quickstart and use --provider local (no key needed)."
)


class CliError(Exception):
    """A problem to report in one line and exit with status 2."""


def _pick_provider(args: argparse.Namespace) -> str:
    if args.provider:
        return str(args.provider)
    if args.base_url:
        return "compatible"
    env = os.environ.get("ALLM_PROVIDER")
    if env:
        if env not in PROVIDERS:
            raise CliError(f"ALLM_PROVIDER={env!r} is not one of {', '.join(PROVIDERS)}")
        return env
    if os.environ.get("OPENAI_API_KEY"):
        return "openai"
    from .local import LocalServerError, find_model, find_server_binary

    try:
        find_server_binary()
        find_model()
    except LocalServerError:
        raise CliError(NOTHING_CONFIGURED) from None
    return "local"


@contextlib.contextmanager
def _engine(args: argparse.Namespace, need_model: bool = True) -> Iterator[Engine]:
    provider = _pick_provider(args)
    spec = registry.spec(provider)
    model = args.model or spec.default_model
    base_url = args.base_url
    server = None
    try:
        if spec.local:
            from .local import LocalServer, LocalServerError

            try:
                server = LocalServer().start()
            except LocalServerError as exc:
                raise CliError(f"allm: cannot start the local model: {exc}") from None
            base_url = server.base_url
        elif spec.base_url == "required" and not base_url:
            raise CliError(f"--provider {provider} needs --base-url (e.g. http://127.0.0.1:8080/v1)")
        elif spec.base_url == "none" and base_url:
            raise CliError(f"--provider {provider} takes no --base-url")
        adapter = registry.build(provider, base_url=base_url)
        if not model and need_model:
            raise CliError(f"--model is required for --provider {provider}")
        yield Engine(adapter=adapter, model=model)
    finally:
        if server is not None:
            server.stop()


@contextlib.contextmanager
def _profile_engine(args: argparse.Namespace, messages: list[Message]) -> Iterator[Engine]:
    """The engine of ``--card`` / ``--profile`` (its system prompt put first in ``messages``)."""
    from .interactive import Engines, choice_from_args
    from .profiles import Profiles

    profiles = Profiles.load(args.profiles) if args.profiles else Profiles.load_default()
    choice = choice_from_args(args, profiles, None)
    if choice.system and not messages:
        messages.append(system(choice.system))
    engines = Engines()
    try:
        yield engines.engine(choice)
    finally:
        engines.close()


# SmolLM2-135M answers sensibly when told to be brief and sampled greedily.
LOCAL_DEFAULTS = {"system": "You are a helpful assistant. Be brief.", "temperature": 0.0, "max_tokens": 256}


def _chat(args: argparse.Namespace, out: TextIO) -> int:
    by_profile = bool(args.card or args.profile or args.prompt_name)
    provider = None if by_profile else _pick_provider(args)
    if provider == "local":
        for name, value in LOCAL_DEFAULTS.items():
            if getattr(args, name) is None:
                setattr(args, name, value)
    if args.interactive:
        from .interactive import run

        return run(args, provider, out=out)
    messages: list[Message] = []
    if args.system:
        messages.append(system(args.system))
    prompt = " ".join(args.prompt) if args.prompt else ""
    if not prompt or prompt == "-":
        prompt = sys.stdin.read()
    if not prompt.strip():
        raise CliError("nothing to ask: give a prompt (or '-' to read it from standard input)")
    messages.append(user(prompt))
    fields: dict[str, Any] = {}
    if args.max_tokens is not None:
        fields["max_tokens"] = args.max_tokens
    if args.temperature is not None:
        fields["temperature"] = args.temperature
    with _profile_engine(args, messages) if by_profile else _engine(args) as engine:
        req = request(messages, **fields)
        collector = Collector(new_request_id())
        stream = api.stream_generate(engine, req, api_key=args.api_key or None)
        show = not args.json and not args.no_stream
        for ev in stream:
            collector.apply(ev)
            if show and (type(ev) is TextDelta or (args.show_reasoning and type(ev) is ReasoningDelta)):
                out.write(ev.delta)
                out.flush()
            elif type(ev) is Error:
                print(f"\nallm: the stream failed: {ev.error}", file=sys.stderr)
            elif show and type(ev) is MessageCompleted:
                out.write("\n")
        resp = collector.response()
    if args.json:
        out.write(codec.dumps(resp).decode() + "\n")
    elif args.no_stream:
        out.write(resp.output_text + "\n")
    if args.usage:
        u = resp.usage
        print(f"[{resp.model}] input_tokens={u.input_tokens} output_tokens={u.output_tokens} finish_reason={resp.finish_reason}", file=sys.stderr)
    return 1 if resp.finish_reason == "error" else 0


def _models(args: argparse.Namespace, out: TextIO) -> int:
    with _engine(args, need_model=False) as engine:
        for m in api.list_models(engine, api_key=args.api_key or None):
            out.write(m + "\n")
    return 0


def _local_server(args: argparse.Namespace, out: TextIO) -> int:
    import subprocess

    from .local import LocalServer, LocalServerError

    try:
        server = LocalServer(port=args.port, embeddings=args.embeddings)
    except LocalServerError as exc:
        raise CliError(str(exc)) from None
    out.write(f"llama-server with SmolLM2 on {server.base_url} (model name: smollm2). Ctrl-C stops it.\n")
    out.flush()
    try:
        return subprocess.call(server.command())
    except KeyboardInterrupt:
        return 0


def _serve(args: argparse.Namespace, out: TextIO) -> int:
    try:
        from .server.serve import serve
    except ImportError as exc:
        raise CliError(f"allm serve needs the server extra (pip install 'allm[server]'): {exc}") from None
    from .local import LocalServerError

    try:
        return serve(args.config, host=args.host, port=args.port, workers=args.workers)
    except LocalServerError as exc:
        raise CliError(f"allm serve with no --config runs the local SmolLM2, which cannot start: {exc}") from None
    except OSError as exc:
        raise CliError(f"allm serve: {exc}") from None


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--provider", choices=PROVIDERS, help="which provider (default: see 'allm --help')")
    p.add_argument("--model", help="model name (a default exists for most providers)")
    p.add_argument("--base-url", help="base URL of the API, e.g. http://127.0.0.1:8080/v1")
    p.add_argument("--api-key", help="key for this call (prefer the provider's environment variable)")


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="allm", description="Talk to LLM providers from the command line.", epilog=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    c = sub.add_parser("chat", help="ask one question and stream the answer")
    c.add_argument("prompt", nargs="*", help="the question ('-' reads standard input)")
    _common(c)
    c.add_argument("--system", help="a system prompt (--provider local defaults to a brief-answer prompt)")
    c.add_argument("--max-tokens", type=int)
    c.add_argument("--temperature", type=float)
    c.add_argument("--no-stream", action="store_true", help="print the answer once complete")
    c.add_argument("--json", action="store_true", help="print the whole response as allm JSON")
    c.add_argument("--usage", action="store_true", help="print token usage to standard error")
    c.add_argument("--show-reasoning", action="store_true", help="also stream the model's reasoning text")
    c.add_argument("-i", "--interactive", action="store_true", help="talk in a loop; stored sessions (see guides/terminal.md)")
    c.add_argument("--session", default="default", help="the session to continue or start with -i (default: default)")
    c.add_argument("--card", help="a character card from the profile registry (model and prompt)")
    c.add_argument("--profile", help="a model profile from the profile registry")
    c.add_argument("--prompt", dest="prompt_name", help="a named system prompt from the profile registry (with --profile)")
    c.add_argument("--profiles", help="the profile registry, a TOML file or directory (default: $ALLM_PROFILES)")
    c.set_defaults(run=_chat)
    m = sub.add_parser("models", help="list the provider's models")
    _common(m)
    m.set_defaults(run=_models)
    s = sub.add_parser("local-server", help="run llama-server with SmolLM2 in the foreground")
    s.add_argument("--port", type=int, default=8080)
    s.add_argument("--embeddings", action="store_true", help="serve embeddings instead of chat")
    s.set_defaults(run=_local_server)
    v = sub.add_parser("serve", help="serve the Open Responses API (see guides/server.md)")
    v.add_argument("--config", help="a TOML config file (default: route every model to the local SmolLM2)")
    v.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    v.add_argument("--port", type=int, default=8000)
    v.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    v.set_defaults(run=_serve)
    return ap


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return int(args.run(args, out or sys.stdout))
    except CliError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    except AllmError as exc:
        print(f"allm: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (``allm models | head -1``): stop quietly. Standard output is
        # pointed at /dev/null so the interpreter's final flush does not fail again.
        with contextlib.suppress(OSError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
