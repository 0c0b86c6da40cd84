"""The AMQP face of a model server (RabbitMQ through aio-pika): requests arrive on the score
queue, answers go to each message's `reply_to` with its `correlation_id`; health requests
arrive on the health queue and are answered the same way."""

from __future__ import annotations

import logging

import aio_pika
import orjson
from aio_pika.abc import AbstractIncomingMessage

from fogline.sdk.contract import ScoreRequest
from fogline.sdk.serve import ModelHost, ServerSettings, wait_for_stop

log = logging.getLogger("fogline.model")


async def serve_amqp(host: ModelHost, settings: ServerSettings) -> None:
    if not (settings.amqp_url and settings.score_queue and settings.health_queue):
        raise SystemExit("AMQP model server needs FOGLINE_AMQP_URL and the score/health queues")
    connection = await aio_pika.connect_robust(settings.amqp_url)
    async with connection:
        channel = await connection.channel()
        # As many requests at once as the host has workers (one, in order, for a stateful
        # model); the broker keeps the rest, and their expiry is the call's timeout.
        await channel.set_qos(prefetch_count=host.concurrency)
        score_queue = await channel.declare_queue(settings.score_queue, auto_delete=True)
        health_queue = await channel.declare_queue(settings.health_queue, auto_delete=True)

        async def reply(message: AbstractIncomingMessage, body: bytes) -> None:
            if message.reply_to:
                await channel.default_exchange.publish(
                    aio_pika.Message(
                        body,
                        correlation_id=message.correlation_id,
                        content_type="application/json",
                    ),
                    routing_key=message.reply_to,
                )

        async def on_score(message: AbstractIncomingMessage) -> None:
            async with message.process(requeue=False):
                try:
                    request = ScoreRequest.from_json(orjson.loads(message.body))
                    outputs = await host.score(request)
                except Exception as exc:
                    log.exception("score failed")
                    await reply(message, orjson.dumps({"error": str(exc)}))
                    return
                await reply(message, host.answer(request, outputs))

        async def on_health(message: AbstractIncomingMessage) -> None:
            async with message.process(requeue=False):
                ok, detail = host.health()
                detail.update(scored=host.scored, failures=host.failures, ok=ok)
                await reply(message, orjson.dumps(detail))

        await score_queue.consume(on_score)
        await health_queue.consume(on_health)
        await wait_for_stop()
