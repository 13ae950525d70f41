"""Send conversion events through `pinterest-api-sdk`, as an advertiser's server would.

Run as a child process (the SDK reads `PINTEREST_API_URI` at import and walks the parent
of the working directory for a `config.json`): `python pinterest_sdk.py < request.json`,
where the request names the ad account, the test flag and the events, each either the
arguments of `Conversion.create_conversion_event` (`"helper": true`) or the fields of the
generated `ConversionEventsData` model. Prints one JSON line: the SDK's parsed
`ConversionApiResponse` (`to_dict()`), or the exception class, HTTP status and body.
"""

from __future__ import annotations

import json
import sys
from typing import Any


def main() -> int:
    request = json.load(sys.stdin)
    from openapi_generated.pinterest_client.api.conversion_events_api import ConversionEventsApi
    from openapi_generated.pinterest_client.exceptions import ApiException
    from openapi_generated.pinterest_client.model.conversion_events import ConversionEvents
    from openapi_generated.pinterest_client.model.conversion_events_custom_data import (
        ConversionEventsCustomData,
    )
    from openapi_generated.pinterest_client.model.conversion_events_custom_data_contents import (
        ConversionEventsCustomDataContents,
    )
    from openapi_generated.pinterest_client.model.conversion_events_data import (
        ConversionEventsData,
    )
    from openapi_generated.pinterest_client.model.conversion_events_user_data import (
        ConversionEventsUserData,
    )
    from pinterest.ads.conversion_events import Conversion
    from pinterest.client import PinterestSDKClient

    client = PinterestSDKClient.create_client_with_token(request["token"])
    events: list[Any] = []
    for spec in request["events"]:
        if spec.pop("helper", False):
            events.append(Conversion.create_conversion_event(**spec))
            continue
        custom = dict(spec.pop("custom_data", {}))
        contents = [ConversionEventsCustomDataContents(**c) for c in custom.pop("contents", [])]
        if contents:
            custom["contents"] = contents
        events.append(
            ConversionEventsData(
                user_data=ConversionEventsUserData(**spec.pop("user_data")),
                custom_data=ConversionEventsCustomData(**custom),
                **spec,
            )
        )
    try:
        if request.get("generated"):
            api = ConversionEventsApi(client)
            response = api.events_create(
                ad_account_id=request["ad_account_id"],
                conversion_events=ConversionEvents(data=events),
                test=request["test"],
            )
        else:
            response = Conversion.send_conversion_events(
                ad_account_id=request["ad_account_id"],
                conversion_events=events,
                test=request["test"],
                client=client,
            )
    except ApiException as exc:
        body = exc.body.decode() if isinstance(exc.body, bytes) else exc.body
        print(json.dumps({"error": type(exc).__name__, "status": exc.status, "body": body}))
        return 0
    print(json.dumps({"type": type(response).__name__, "response": response.to_dict()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
