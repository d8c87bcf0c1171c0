// WrapperChains: collecting what wrapper plugins contribute, in configured order.
#include <micro/wrapper.hpp>

namespace micro {

void WrapperChains::add(const WrapperSet& set) {
  if (set.handler) handler_.push_back(set.handler);
  if (set.client) client_.push_back(set.client);
  if (set.call) call_.push_back(set.call);
  if (set.publish) publish_.push_back(set.publish);
  if (set.subscriber) subscriber_.push_back(set.subscriber);
  if (set.handler_stream) handler_stream_.push_back(set.handler_stream);
  if (set.client_stream) client_stream_.push_back(set.client_stream);
}

}  // namespace micro
